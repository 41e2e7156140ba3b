// Prints the body of an HTTP GET (exit 1 on error or non-2xx). Used inside the sandbox's network
// namespace by the demo and the tests: Debian's static busybox wget crashes in glibc's resolver.
const url = process.argv[2];
const timeoutMs = Number(process.argv[3] ?? 5000);
try {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  const body = await res.text();
  process.stdout.write(body);
  process.exit(res.ok ? 0 : 1);
} catch (err) {
  process.stderr.write(`GET ${url}: ${err.cause?.code ?? err.message}\n`);
  process.exit(1);
}
