/**
 * Newline-delimited framing with a size cap. Feed it chunks; it returns the complete lines
 * (without the newline; blank lines and a trailing CR are dropped) or reports that the
 * message being received is over the cap.
 */
export class LineFramer {
  private parts: Buffer[] = [];
  private pending = 0;

  constructor(private readonly maxBytes: number) {}

  push(chunk: Buffer): { lines: Buffer[]; overflow: boolean } {
    const lines: Buffer[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, nl);
      if (this.pending + piece.length > this.maxBytes) return { lines, overflow: true };
      const line = this.parts.length > 0 ? Buffer.concat([...this.parts, piece]) : piece;
      this.parts = [];
      this.pending = 0;
      const end = line.length > 0 && line[line.length - 1] === 13 ? line.length - 1 : line.length;
      if (end > 0 && !isBlank(line, end)) lines.push(line.subarray(0, end));
      start = nl + 1;
    }
    const rest = chunk.subarray(start);
    if (rest.length > 0) {
      this.pending += rest.length;
      if (this.pending > this.maxBytes) return { lines, overflow: true };
      this.parts.push(rest);
    }
    return { lines, overflow: false };
  }

  /** Bytes received of a message not yet terminated. */
  get buffered(): number {
    return this.pending;
  }
}

function isBlank(line: Buffer, end: number): boolean {
  for (let i = 0; i < end; i++) {
    const c = line[i];
    if (c !== 32 && c !== 9) return false;
  }
  return true;
}
