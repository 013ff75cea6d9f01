// Drives the published TypeScript SDK (sandbox-agent@0.4.2) against a server, one step per
// SDK feature, and prints {step: result} as JSON for tests/test_ts_sdk.py to check.
// usage: node sdk_processes.mjs BASE_URL [TOKEN [STEP,STEP...]]
// The terminal steps also run against the original server (tests/test_ts_sdk.py), which
// shows that they are right. Every wait is for a result, with a deadline.
import { SandboxAgent, SandboxAgentError } from "sandbox-agent";
import WebSocket from "ws"; // Node 20 has no global WebSocket: the SDK takes one

const [baseUrl, token, only] = process.argv.slice(2);
const sdk = await SandboxAgent.connect({ baseUrl, token });
const text = (entry) => Buffer.from(entry.data, "base64").toString("utf8");

// A promise, or an error after timeoutMs.
function within(what, promise, timeoutMs = 10000) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// A terminal session with everything it received: ready/exit/error frames, output, close.
function attach(id, options = {}) {
  const session = sdk.connectProcessTerminal(id, { WebSocket, ...options });
  const seen = { ready: [], exit: [], errors: [], closes: 0, output: "" };
  session.onReady((frame) => seen.ready.push(frame));
  session.onData((bytes) => {
    seen.output += Buffer.from(bytes).toString("utf8");
  });
  session.onExit((frame) => seen.exit.push(frame));
  session.onError((error) => seen.errors.push(error instanceof Error ? error.message : error));
  session.onClose(() => seen.closes++);
  const output = (needle) => until(JSON.stringify(needle), () => seen.output.includes(needle));
  return { session, seen, output, ready: () => until("the ready frame", () => seen.ready.length > 0) };
}

// A raw socket from connectProcessTerminalWebSocket: its text frames, or why it failed.
function rawSocket(id, options = {}) {
  const socket = sdk.connectProcessTerminalWebSocket(id, { WebSocket, ...options });
  const seen = { frames: [], error: null, closed: false };
  socket.on("message", (data, isBinary) => {
    if (!isBinary) seen.frames.push(JSON.parse(data.toString()));
  });
  socket.on("error", (error) => {
    seen.error = error.message;
  });
  socket.on("close", () => {
    seen.closed = true;
  });
  return { socket, seen };
}

async function until(what, check, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

async function failure(promise) {
  try {
    await promise;
    return { error: null };
  } catch (e) {
    return { error: { isSandboxAgentError: e instanceof SandboxAgentError, status: e.status, problem: e.problem } };
  }
}

const STEPS = {
  async config() {
    const before = await sdk.getProcessConfig();
    const set = await sdk.setProcessConfig({ ...before, maxOutputBytes: 4 });
    const after = await sdk.getProcessConfig();
    const refused = await failure(sdk.setProcessConfig({ ...before, maxConcurrentProcesses: 0 }));
    await sdk.setProcessConfig(before);
    return { before, set, after, refused };
  },

  async run() {
    const done = await sdk.runProcess({ command: "sh", args: ["-c", "echo out; echo err >&2; exit 3"] });
    const timedOut = await sdk.runProcess({ command: "sleep", args: ["10"], timeoutMs: 200 });
    return { done, timedOut };
  },

  async lifecycle() {
    const created = await sdk.createProcess({ command: "sh", args: ["-c", "echo one; echo two >&2; exec sleep 30"] });
    const got = await sdk.getProcess(created.id);
    const listed = (await sdk.listProcesses({ owner: "user" })).processes.map((p) => p.id);
    const none = (await sdk.listProcesses({ owner: "system" })).processes;
    const logs = await until("two entries", async () => {
      const answer = await sdk.getProcessLogs(created.id);
      return answer.entries.length >= 2 && answer;
    });
    const stderrOnly = await sdk.getProcessLogs(created.id, { stream: "stderr" });
    const tail = await sdk.getProcessLogs(created.id, { tail: 1 });
    const deleteRunning = await failure(sdk.deleteProcess(created.id));

    // Follow from after the first entry; our server ends the stream once the process exited.
    const followed = [];
    const subscription = await sdk.followProcessLogs(created.id, (entry) => followed.push(entry), { since: 1 });
    await until("the followed entry", () => followed.length >= 1);
    const stopped = await sdk.stopProcess(created.id, { waitMs: 5000 });
    await subscription.closed;

    const other = await sdk.createProcess({ command: "sleep", args: ["30"] });
    const killed = await sdk.killProcess(other.id, { waitMs: 5000 });
    const deleted = [await sdk.deleteProcess(created.id), await sdk.deleteProcess(other.id)];
    const gone = await failure(sdk.getProcess(created.id));
    return {
      created, got, listed, none, deleteRunning, stopped, killed, deleted, gone,
      logs: logs.entries.map((e) => ({ ...e, text: text(e) })),
      logsStream: logs.stream,
      stderrOnly: stderrOnly.entries.map(text),
      tail: tail.entries.map((e) => e.sequence),
      followed: followed.map((e) => ({ sequence: e.sequence, stream: e.stream, text: text(e) })),
    };
  },

  // sendProcessInput: the three encodings, then the refusals.
  async input() {
    const cat = await sdk.createProcess({ command: "cat", interactive: true });
    const written = [
      await sdk.sendProcessInput(cat.id, { data: Buffer.from("one\n").toString("base64") }), // base64 by default
      await sdk.sendProcessInput(cat.id, { data: "twó\n", encoding: "utf8" }),
      await sdk.sendProcessInput(cat.id, { data: "three\n", encoding: "text" }),
      await sdk.sendProcessInput(cat.id, { data: "" }),
    ];
    const echoed = await until("cat's echo of the input", async () => {
      const answer = await sdk.getProcessLogs(cat.id, { stream: "stdout" });
      const all = answer.entries.map(text).join("");
      return all.includes("three\n") && all;
    });
    const badBase64 = await failure(sdk.sendProcessInput(cat.id, { data: "!!" }));
    const badEncoding = await failure(sdk.sendProcessInput(cat.id, { data: "x", encoding: "hex" }));
    const tooBig = await failure(sdk.sendProcessInput(cat.id, { data: "x".repeat(65537), encoding: "utf8" }));
    const unknown = await failure(sdk.sendProcessInput("no-such-process", { data: "aGkK" }));
    await sdk.killProcess(cat.id, { waitMs: 5000 });
    const exited = await failure(sdk.sendProcessInput(cat.id, { data: "aGkK" }));
    await sdk.deleteProcess(cat.id);
    return { written, echoed, badBase64, badEncoding, tooBig, unknown, exited };
  },

  // resizeProcessTerminal, the WebSocket URL, and a whole terminal session on a real shell.
  async terminal() {
    const shell = await sdk.createProcess({ command: "sh", tty: true, interactive: true });
    const resized = await sdk.resizeProcessTerminal(shell.id, { cols: 100, rows: 30 });
    const url = sdk.buildProcessTerminalWebSocketUrl(shell.id);
    const otherUrl = sdk.buildProcessTerminalWebSocketUrl(shell.id, { accessToken: "other" });
    const tokenless = await SandboxAgent.connect({ baseUrl, skipHealthCheck: true });
    const urlWithoutToken = tokenless.buildProcessTerminalWebSocketUrl(shell.id);

    const term = attach(shell.id);
    await term.ready();
    term.session.sendInput("echo answer-$((6*7))\n"); // its echo reads $((6*7)): only the shell says 42
    await term.output("answer-42");
    term.session.sendInput("stty size\n");
    await term.output("30 100");
    term.session.resize({ cols: 50, rows: 20 });
    term.session.sendInput(new TextEncoder().encode("stty size\n")); // bytes: a base64 input frame
    await term.output("20 50");
    term.session.sendInput("exit 7\n");
    await within("the end of the session", term.session.closed);
    const after = await sdk.getProcess(shell.id);
    const resizeExited = await failure(sdk.resizeProcessTerminal(shell.id, { cols: 80, rows: 24 }));

    const pipe = await sdk.createProcess({ command: "sleep", args: ["30"] });
    const resizePipe = await failure(sdk.resizeProcessTerminal(pipe.id, { cols: 80, rows: 24 }));
    const resizeUnknown = await failure(sdk.resizeProcessTerminal("no-such-process", { cols: 80, rows: 24 }));
    await sdk.killProcess(pipe.id, { waitMs: 5000 });
    for (const id of [shell.id, pipe.id]) await sdk.deleteProcess(id);
    return {
      resized, url, otherUrl, urlWithoutToken, resizeExited, resizePipe, resizeUnknown,
      id: shell.id,
      ready: term.seen.ready, exit: term.seen.exit, errors: term.seen.errors, closes: term.seen.closes,
      output: term.seen.output,
      after: { status: after.status, exitCode: after.exitCode },
    };
  },

  // close() leaves the process running; a kill ends a session with exitCode null; a bad
  // frame gets an error frame; the token: a wrong one is refused, ours in the URL works.
  async terminalSessions() {
    const cat = await sdk.createProcess({ command: "cat", tty: true });
    const first = attach(cat.id);
    await first.ready();
    first.session.sendInput("ping-1\n");
    await first.output("ping-1");
    first.session.close();
    await within("the closed session", first.session.closed);
    const afterClose = (await sdk.getProcess(cat.id)).status;

    const raw = rawSocket(cat.id);
    await until("the raw socket's ready frame", () => raw.seen.frames.length > 0);
    raw.socket.send("not json");
    await until("an error frame", () => raw.seen.frames.length > 1);
    const stillOpen = raw.socket.readyState === WebSocket.OPEN;
    raw.socket.close();

    const wrong = rawSocket(cat.id, { accessToken: "wrong-token" });
    await until("the refusal of a wrong token", () => wrong.seen.closed);

    const second = attach(cat.id);
    await second.ready();
    await sdk.killProcess(cat.id, { waitMs: 5000 });
    await within("the end of the second session", second.session.closed);
    await sdk.deleteProcess(cat.id);
    return {
      afterClose, stillOpen,
      firstExit: first.seen.exit, firstErrors: first.seen.errors,
      rawFrames: raw.seen.frames,
      wrongToken: wrong.seen.error,
      killedExit: second.seen.exit, killedErrors: second.seen.errors,
    };
  },
};

const results = {};
const wanted = only ? only.split(",") : Object.keys(STEPS);
for (const name of wanted) {
  try {
    results[name] = await STEPS[name]();
  } catch (e) {
    results[name] = { crashed: String(e && e.stack ? e.stack : e) };
  }
}
// Whatever a crashed step left running goes (the original's tty processes escape its group).
for (const p of (await sdk.listProcesses()).processes) {
  if (p.status === "running") await sdk.killProcess(p.id, { waitMs: 5000 }).catch(() => {});
}
console.log(JSON.stringify(results));
process.exit(0);
