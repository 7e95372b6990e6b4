// A progress line for long scripts: a bar redrawn in place on a terminal, a plain line every
// few seconds elsewhere (logs, CI).
export function progress(label: string, total: number, stream: NodeJS.WriteStream = process.stderr) {
  const started = performance.now();
  let lastPlain = 0;
  const fmt = (n: number) => n.toLocaleString('en-US');
  return {
    update(done: number) {
      const elapsed = performance.now() - started;
      const rate = (done / Math.max(elapsed, 1)) * 1000;
      const text = `${label}: ${fmt(done)}/${fmt(total)} (${fmt(Math.round(rate))}/s)`;
      if (stream.isTTY) {
        const width = 30;
        const filled = Math.round((total === 0 ? 1 : done / total) * width);
        stream.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${text}`);
      } else if (elapsed - lastPlain > 2_000 || done === total) {
        lastPlain = elapsed;
        stream.write(`${text}\n`);
      }
    },
    done(): number {
      if (stream.isTTY) stream.write('\n');
      return performance.now() - started;
    },
  };
}
