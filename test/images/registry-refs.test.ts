/** Pure rules of the registry client: references and WWW-Authenticate challenges. */
import t from 'tap';
import { parseChallenge, parseReference } from '../../src/images/net/registry.js';
import { RateLimiter } from '../../src/images/net/download.js';

const HEX = 'a'.repeat(64);

t.test('docker:// references', async (t) => {
  t.same(parseReference('docker://127.0.0.1:5000/hello'), { host: '127.0.0.1:5000', repository: 'hello', reference: 'latest', digest: null });
  t.same(parseReference('docker://ghcr.io/org/team/app:v1.2'), { host: 'ghcr.io', repository: 'org/team/app', reference: 'v1.2', digest: null });
  t.same(parseReference(`docker://reg.local/app@sha256:${HEX}`), { host: 'reg.local', repository: 'app', reference: `sha256:${HEX}`, digest: `sha256:${HEX}` });
  for (const bad of ['docker://', 'docker:///app', 'docker://host', 'docker://host/App', 'docker://host/app:', 'docker://host/app@sha256:12', 'docker://ho st/app', 'http://host/app', 'docker://host/app:tag/x']) {
    t.throws(() => parseReference(bad), { code: 'INVALID_IMAGE' }, bad);
  }
});

t.test('WWW-Authenticate challenges', async (t) => {
  t.same(parseChallenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:app:pull"'), {
    scheme: 'bearer',
    params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:app:pull' },
  });
  t.same(parseChallenge('Basic realm="Registry Realm"'), { scheme: 'basic', params: { realm: 'Registry Realm' } });
  t.same(parseChallenge('bearer realm=https://a/t'), { scheme: 'bearer', params: { realm: 'https://a/t' } }, 'unquoted values, any case');
  t.equal(parseChallenge('Negotiate abc'), null);
  t.equal(parseChallenge(undefined), null);
});

t.test('the bandwidth cap holds a rate over a second', async (t) => {
  const rate = new RateLimiter(200_000);
  const signal = new AbortController().signal;
  const start = Date.now();
  // One second's burst is free; 300 kB more at 200 kB/s take about 1.5 s.
  for (let i = 0; i < 50; i++) await rate.take(10_000, signal);
  const ms = Date.now() - start;
  t.ok(ms >= 1300 && ms < 3000, `500 kB at 200 kB/s with a 200 kB burst took ${ms} ms`);
});
