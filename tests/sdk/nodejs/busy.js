// A small program profiled by Pyroscope's own Node.js SDK (@pyroscope/nodejs), pushing to the URL
// given: `node busy.js URL MILLISECONDS`. busyLeaf holds most of the time, so stored profiles name it.
const Pyroscope = require('@pyroscope/nodejs');

const [url, ms] = [process.argv[2], Number(process.argv[3])];
Pyroscope.init({
  serverAddress: url,
  appName: 'nodeapp',
  tags: { env: 'test' },
  flushIntervalMs: 2000,
  wall: { samplingDurationMs: 2000, collectCpuTime: true },
});
Pyroscope.start();

function busyLeaf(n) { let s = 0; for (let i = 0; i < n; i++) s += i * i; return s; }
function work() { return busyLeaf(2e6); }

const t0 = Date.now();
function loop() {
  const end = Date.now() + 50;
  while (Date.now() < end) work();
  if (Date.now() - t0 < ms) setImmediate(loop);
  else Pyroscope.stop().then(() => process.exit(0));
}
loop();
