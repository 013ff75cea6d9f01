// Drives the published TypeScript SDK (sandbox-agent@0.4.2) against a server, one step per
// SDK feature, and prints {step: result} as JSON for tests/test_ts_sdk.py to check.
// usage: node sdk_processes.mjs BASE_URL [TOKEN]
// Terminal and input steps (sendProcessInput, resizeProcessTerminal, connectProcessTerminal)
// belong in STEPS too, once the server has terminals.
import { SandboxAgent, SandboxAgentError } from "sandbox-agent";

const [baseUrl, token] = process.argv.slice(2);
const sdk = await SandboxAgent.connect({ baseUrl, token });
const text = (entry) => Buffer.from(entry.data, "base64").toString("utf8");

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
};

const results = {};
for (const [name, step] of Object.entries(STEPS)) {
  try {
    results[name] = await step();
  } catch (e) {
    results[name] = { crashed: String(e && e.stack ? e.stack : e) };
  }
}
console.log(JSON.stringify(results));
