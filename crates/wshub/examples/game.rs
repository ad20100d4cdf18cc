//! Game rooms: players join a room by name and play tic-tac-toe; every move goes to the
//! room, and the server keeps each room's board, so a player who joins late (or reloads)
//! gets the game as it stands.
//!
//! ```text
//! cargo run --example game -- 127.0.0.1:8080
//! ```
//!
//! A client sends `{"type":"join","room":"r1","name":"alice"}`, then
//! `{"type":"move","cell":4}` (cells 0 to 8, row by row) or `{"type":"reset"}`. After each
//! join, leave, move or reset the room receives the whole state:
//! `{"type":"state","room":"r1","board":["X","","O",…],"next":"O","winner":null,
//! "players":["alice","bob"],"last":{"by":"alice","cell":4,"mark":"X"}}`. A move that is not
//! allowed gets `{"type":"error","message":…}` for its sender only.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{response::Html, routing::get};
use serde::{Deserialize, Serialize};
use wshub::{Connection, Hub, Message, Server};

/// What a player may send.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Command {
    Join { room: String, name: String },
    Move { cell: usize },
    Reset,
}

/// One room's game, as every player sees it.
#[derive(Clone, Serialize)]
struct Game {
    board: [&'static str; 9],
    next: &'static str,
    winner: Option<&'static str>,
    players: Vec<String>,
    last: Option<LastMove>,
}

#[derive(Clone, Serialize)]
struct LastMove {
    by: String,
    cell: usize,
    mark: &'static str,
}

impl Default for Game {
    /// An empty board; X plays first.
    fn default() -> Self {
        Self {
            board: [""; 9],
            next: "X",
            winner: None,
            players: Vec::new(),
            last: None,
        }
    }
}

impl Game {
    fn play(&mut self, by: &str, cell: usize) -> Result<(), &'static str> {
        if self.winner.is_some() {
            return Err("the game is over; reset to play again");
        }
        match self.board.get(cell) {
            None => return Err("cells are 0 to 8"),
            Some(&"") => {}
            Some(_) => return Err("that cell is taken"),
        }
        let mark = self.next;
        self.board[cell] = mark;
        self.next = if mark == "X" { "O" } else { "X" };
        self.last = Some(LastMove {
            by: by.to_owned(),
            cell,
            mark,
        });
        const LINES: [[usize; 3]; 8] = [
            [0, 1, 2],
            [3, 4, 5],
            [6, 7, 8],
            [0, 3, 6],
            [1, 4, 7],
            [2, 5, 8],
            [0, 4, 8],
            [2, 4, 6],
        ];
        if LINES
            .iter()
            .any(|l| l.iter().all(|&c| self.board[c] == mark))
        {
            self.winner = Some(mark);
        } else if self.board.iter().all(|c| !c.is_empty()) {
            self.winner = Some("draw");
        }
        Ok(())
    }
}

/// Every room's game. Rooms are created by their first player and removed with their last.
type Games = Arc<Mutex<HashMap<String, Game>>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let games: Games = Arc::default();
    let hub = Hub::builder()
        .handler(move |conn| play(conn, Arc::clone(&games)))
        .build();
    let app = hub.router().route("/", get(|| async { Html(PAGE) }));
    let server = Server::start_with_router(addr, hub, app).await?;
    println!(
        "game: open http://{0}/ (WebSocket at ws://{0}/ws); Ctrl-C to stop",
        server.local_addr()
    );
    tokio::signal::ctrl_c().await?;
    server.stop(Duration::from_secs(5)).await;
    Ok(())
}

/// One player's connection, from its first message to its last: the seat it holds is a
/// local variable, and it gives the seat up when the connection ends.
async fn play(conn: Connection, games: Games) {
    let mut seat: Option<(String, String)> = None; // (room, name)
    while let Some(msg) = conn.recv().await {
        let command = msg
            .as_text()
            .and_then(|text| serde_json::from_str::<Command>(text).ok());
        let outcome = match (command, &seat) {
            (Some(Command::Join { room, name }), _) => {
                if !(1..=32).contains(&room.len()) || !(1..=32).contains(&name.len()) {
                    Err("room and name are 1 to 32 bytes")
                } else {
                    if let Some((old, name)) = seat.take() {
                        leave(&conn, &games, &old, &name);
                    }
                    let _ = conn.join(&room);
                    change(&conn, &games, &room, |game| {
                        game.players.push(name.clone());
                        Ok(())
                    });
                    seat = Some((room, name));
                    Ok(())
                }
            }
            (Some(Command::Move { cell }), Some((room, name))) => {
                change(&conn, &games, room, |game| game.play(name, cell));
                Ok(())
            }
            (Some(Command::Reset), Some((room, _))) => {
                change(&conn, &games, room, |game| {
                    let players = std::mem::take(&mut game.players);
                    *game = Game {
                        players,
                        ..Game::default()
                    };
                    Ok(())
                });
                Ok(())
            }
            (Some(_), None) => Err("join a room first"),
            (None, _) => Err("not a command: join, move or reset"),
        };
        if let Err(message) = outcome {
            let _ = conn.send_json(&serde_json::json!({"type": "error", "message": message}));
        }
    }
    if let Some((room, name)) = seat {
        leave(&conn, &games, &room, &name);
    }
}

/// Applies `f` to a room's game (creating it), then sends the new state to the room, or
/// the refusal to the player alone.
fn change(
    conn: &Connection,
    games: &Games,
    room: &str,
    f: impl FnOnce(&mut Game) -> Result<(), &'static str>,
) {
    let mut games = games.lock().unwrap_or_else(|e| e.into_inner());
    let game = games.entry(room.to_owned()).or_default();
    match f(game) {
        // Sent under the lock, so every player sees the states in the order they happened.
        Ok(()) => {
            if let Ok(state) = state_message(room, game) {
                conn.hub().broadcast_to_room(room, state);
            }
        }
        Err(message) => {
            let _ = conn.send_json(&serde_json::json!({"type": "error", "message": message}));
        }
    }
}

fn leave(conn: &Connection, games: &Games, room: &str, name: &str) {
    conn.leave(room);
    let mut all = games.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(game) = all.get_mut(room) {
        if let Some(position) = game.players.iter().position(|p| p == name) {
            game.players.remove(position);
        }
        if game.players.is_empty() {
            all.remove(room);
        } else if let Ok(state) = state_message(room, game) {
            conn.hub().broadcast_to_room(room, state);
        }
    }
}

fn state_message(room: &str, game: &Game) -> Result<Message, wshub::Error> {
    let mut state = serde_json::to_value(game).map_err(wshub::Error::Json)?;
    state["type"] = "state".into();
    state["room"] = room.into();
    Message::json(&state)
}

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wshub game rooms</title>
<style>
  body { font: 16px system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; background: #fdf6ec; color: #2b2118; text-align: center; }
  h1 { font-size: 1.5rem; }
  form { display: flex; gap: .5rem; justify-content: center; margin-bottom: 1rem; }
  input { font: inherit; padding: .4rem .6rem; border: 1px solid #d8c8b0; border-radius: .4rem; width: 9rem; }
  button { font: inherit; padding: .4rem 1rem; border: 0; border-radius: .4rem; background: #e07a2f; color: #fff; cursor: pointer; }
  #board { display: grid; grid-template-columns: repeat(3, 6rem); gap: .4rem; justify-content: center; margin: 1rem auto; }
  .cell { width: 6rem; height: 6rem; font-size: 3rem; font-weight: 700; background: #fff; border-radius: .6rem; box-shadow: 0 2px 6px #0002; color: #2b2118; padding: 0; }
  .cell.X { color: #d9480f; } .cell.O { color: #1c7ed6; } .cell.last { outline: 3px solid #e07a2f; }
  #status { font-size: 1.2rem; min-height: 1.5rem; } #players, #error { color: #7a6a58; font-size: .9rem; min-height: 1.2rem; }
</style>
</head>
<body>
<h1>🎮 wshub game rooms</h1>
<form id="join"><input id="name" placeholder="your name"><input id="room" placeholder="room" value="room-1"><button>Join</button></form>
<div id="status">join a room to play</div>
<div id="board"></div>
<div id="players"></div>
<div id="error"></div>
<button id="reset">New game</button>
<script>
  const $ = (id) => document.getElementById(id);
  $("name").value = localStorage.getItem("wshub-game-name") || "player-" + Math.floor(Math.random() * 100);
  let ws, joined;
  const cells = [];
  for (let i = 0; i < 9; i++) {
    const b = document.createElement("button"); b.className = "cell";
    b.onclick = () => send({ type: "move", cell: i });
    $("board").appendChild(b); cells.push(b);
  }
  function send(m) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(m)); }
  function render(s) {
    s.board.forEach((mark, i) => { cells[i].textContent = mark; cells[i].className = "cell " + mark + (s.last && s.last.cell === i ? " last" : ""); });
    $("status").textContent = s.winner === "draw" ? "Draw!" : s.winner ? s.winner + " wins!" : s.next + " to play";
    $("players").textContent = "in " + s.room + ": " + s.players.join(", ");
    $("error").textContent = "";
  }
  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + location.host + "/ws");
    ws.onopen = () => { if (joined) send(joined); };
    ws.onclose = () => { $("status").textContent = "disconnected; reconnecting…"; setTimeout(connect, 1000); };
    ws.onmessage = (event) => {
      const m = JSON.parse(event.data);
      if (m.type === "state") render(m); else if (m.type === "error") $("error").textContent = m.message;
    };
  }
  $("join").onsubmit = (event) => {
    event.preventDefault();
    localStorage.setItem("wshub-game-name", $("name").value);
    joined = { type: "join", room: $("room").value.trim(), name: $("name").value.trim() };
    send(joined);
  };
  $("reset").onclick = () => send({ type: "reset" });
  connect();
</script>
</body>
</html>
"##;
