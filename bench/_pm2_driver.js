// Drives pm2 through its programmatic API for the benchmarks: one JSON request per line
// on stdin, one reply per line on stdout marked with "@@pm2 " (pm2 itself may print).
// PM2_HOME (set by the caller) keeps the daemon and its files in the scratch folder.
//
//   {"op": "start", "apps": [{name, script, args, out, err}]}   -> all started
//   {"op": "list"}                                               -> [{name, pid, status}]
//   {"op": "stop", "names": [...]}                               -> all stopped
//   {"op": "delete"}                                             -> every app deleted
//   {"op": "latency", "app": {...}}                              -> [receive - printed] in s, from the bus
//   {"op": "kill"}                                               -> daemon killed, then this exits
'use strict';

const readline = require('readline');
const pm2 = require(process.env.PM2_MODULE);

function reply(obj) {
  process.stdout.write('@@pm2 ' + JSON.stringify(obj) + '\n');
}

function promisify(fn) {
  return new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res))));
}

function appOptions(app) {
  return {
    name: app.name,
    script: app.script,
    args: app.args || [],
    interpreter: 'none',
    exec_mode: 'fork',
    autorestart: false,
    time: true,
    output: app.out || '/dev/null',
    error: app.err || '/dev/null',
    merge_logs: true,
  };
}

async function handle(req) {
  switch (req.op) {
    case 'start':
      await Promise.all(req.apps.map((app) => promisify((cb) => pm2.start(appOptions(app), cb))));
      return { ok: true };
    case 'list': {
      const list = await promisify((cb) => pm2.list(cb));
      return { ok: true, list: list.map((p) => ({ name: p.name, pid: p.pid, status: p.pm2_env.status })) };
    }
    case 'stop':
      await Promise.all(req.names.map((name) => promisify((cb) => pm2.stop(name, cb))));
      return { ok: true };
    case 'delete':
      await promisify((cb) => pm2.delete('all', cb)).catch(() => null);
      return { ok: true };
    case 'latency': {
      const bus = await promisify((cb) => pm2.launchBus(cb));
      const delays = [];
      const done = new Promise((resolve) => {
        bus.on('log:out', (packet) => {
          if (packet.process.name !== req.app.name) return;
          const now = Date.now() / 1000;
          for (const line of String(packet.data).split('\n')) {
            const m = /(\d+\.\d+)$/.exec(line.trim());
            if (m) delays.push(now - parseFloat(m[1]));
          }
        });
        bus.on('process:event', (packet) => {
          if (packet.process.name === req.app.name && (packet.event === 'exit' || packet.event === 'stop')) {
            setTimeout(resolve, 200);
          }
        });
      });
      await promisify((cb) => pm2.start(appOptions(req.app), cb));
      await done;
      await promisify((cb) => pm2.Client.disconnectBus(cb)).catch(() => null);
      return { ok: true, delays };
    }
    case 'kill':
      await promisify((cb) => pm2.killDaemon(cb)).catch(() => null);
      pm2.disconnect();
      return { ok: true, exit: true };
    default:
      throw new Error('unknown op ' + req.op);
  }
}

pm2.connect((err) => {
  if (err) {
    reply({ ok: false, error: String(err) });
    process.exit(1);
  }
  reply({ ok: true, ready: true });
  const rl = readline.createInterface({ input: process.stdin });
  let queue = Promise.resolve();
  rl.on('line', (line) => {
    queue = queue.then(async () => {
      let res;
      try {
        res = await handle(JSON.parse(line));
      } catch (e) {
        res = { ok: false, error: String((e && e.message) || e) };
      }
      reply(res);
      if (res.exit) setTimeout(() => process.exit(0), 50);
    });
  });
  rl.on('close', () => {
    queue.then(() => process.exit(0));
  });
});
