"""The examples each ``process`` command's ``--help`` ends with."""

from __future__ import annotations

__all__ = ["EXAMPLES", "PROCESS_EXAMPLES"]

PROCESS_EXAMPLES = """\
examples:
  sandbox-agent process run -- python -c 'print("hello")'
  sandbox-agent process run -it -- bash                # your terminal on a shell; Ctrl-P Ctrl-Q detaches
  id=$(sandbox-agent process start --cwd /srv -- python -m http.server 8000)
  sandbox-agent process logs -f --tail 20 "$id"
  sandbox-agent process stop "$id" && sandbox-agent process rm "$id"
  sandbox-agent --url http://10.0.0.5:2468 --token "$TOKEN" process ls
"""

EXAMPLES = {
    "start": """\
examples:
  sandbox-agent process start -- python -m http.server 8000
  sandbox-agent process start --cwd /app --env PORT=3000 --env DEBUG=1 -- npm run dev
  sandbox-agent process start -it -- bash        # and attach: Ctrl-P Ctrl-Q detaches, bash keeps running
  sandbox-agent process start -t -- htop         # on a terminal, in the background: attach later
  sandbox-agent process start --name web --wait-for port:3000 -- npm run dev   # id printed once it listens
  sandbox-agent process start --name api --label app=shop --wait-for 'log:Listening on' -- npm start
  sandbox-agent process start --name worker --restart on-failure:5 -- python worker.py   # back after a crash
""",
    "restart": """\
examples:
  sandbox-agent process restart web            # by name: stopped, started again, same id and logs
  sandbox-agent process restart web api
""",
    "run": """\
examples:
  sandbox-agent process run -- pytest -x tests
  sandbox-agent process run --rm --env CI=1 -- sh -c 'make && make check'; echo "exit status $?"
  echo hi | sandbox-agent process run -- cat    # piped stdin reaches the process
  sandbox-agent process run -it -- bash         # your terminal on it, until it exits
""",
    "attach": """\
examples:
  sandbox-agent process attach 01m8fgr3pqe44j6c4rtxkx2gae            # Ctrl-P Ctrl-Q to detach
  sandbox-agent process attach --detach-keys ctrl-a,d 01m8fgr3pqe44j6c4rtxkx2gae
  sandbox-agent process attach --replay 4096 01m8fgr3pqe44j6c4rtxkx2gae   # redraw recent output
""",
    "input": """\
examples:
  sandbox-agent process input 01m8fgr3pqe44j6c4rtxkx2gae $'ls -l\\n'
  printf 'a\\nb\\n' | sandbox-agent process input --eof 01m8fgr3pqe44j6c4rtxkx2gae -
  sandbox-agent process input --eof 01m8fgr3pqe44j6c4rtxkx2gae           # close its stdin
""",
    "exec": """\
examples:
  sandbox-agent process exec -- git status --short
  sandbox-agent process exec --timeout 5 --max-output 65536 -- make -n
""",
    "wait": """\
examples:
  sandbox-agent process wait 01m8fgr3pqe44j6c4rtxkx2gae; echo "it exited with $?"
  sandbox-agent process wait --timeout 60 01m8fgr3pqe44j6c4rtxkx2gae
  sandbox-agent process wait --ready --timeout 120 web   # by name, until it is ready (--wait-for)
""",
    "ls": """\
examples:
  sandbox-agent process ls
  sandbox-agent process ls --json | jq -r '.[] | select(.status == "running") | .id'
  sandbox-agent process ls --status running --label app=shop
""",
    "inspect": """\
example:
  sandbox-agent process inspect 01m8fgr3pqe44j6c4rtxkx2gae | jq .exitCode
""",
    "logs": """\
examples:
  sandbox-agent process logs 01m8fgr3pqe44j6c4rtxkx2gae
  sandbox-agent process logs -f --tail 50 --stream stderr --no-timestamps 01m8fgr3pqe44j6c4rtxkx2gae
""",
    "stop": """\
example:
  sandbox-agent process stop 01m8fgr3pqe44j6c4rtxkx2gae
""",
    "kill": """\
example:
  sandbox-agent process kill 01m8fgr3pqe44j6c4rtxkx2gae
""",
    "rm": """\
examples:
  sandbox-agent process rm 01m8fgr3pqe44j6c4rtxkx2gae
  sandbox-agent process rm --force $(sandbox-agent process ls --quiet)   # everything
""",
    "prune": """\
examples:
  sandbox-agent process prune          # every exited process, and its logs
""",
}
