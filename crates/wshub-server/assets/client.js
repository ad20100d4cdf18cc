export class WshubClient {}
