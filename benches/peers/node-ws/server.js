// A broadcast hub with Node's `ws`, as its README shows ("broadcast to all connected clients,
// including itself"): every text message from any client goes to every open client.
// Usage: node server.js 127.0.0.1:8080   (serves ws://127.0.0.1:8080/ws)
'use strict';
const { WebSocketServer, WebSocket } = require('ws');

const addr = process.argv[2] || '127.0.0.1:8080';
const sep = addr.lastIndexOf(':');
const host = addr.slice(0, sep);
const port = Number(addr.slice(sep + 1));

const wss = new WebSocketServer({ host, port, path: '/ws' });
wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    }
  });
});
wss.on('listening', () => console.log(`node-ws listening on ws://${addr}/ws`));
