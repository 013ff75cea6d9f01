"""The supervisor program: the launcher and one supervisor per managed process.

Standard library only, and run as its own interpreter (``python -I -S <this folder>``),
so that it never dies with the server and never needs what the server installs. The
server's side of it imports only ``ondisk``: the file names, the log line and timestamp
layout, the state record's schema, atomic writes and the signal protocol.

    ondisk      what the supervisor writes and the engine reads; the signals between them
    capture     a child's output pipes turned into timestamped log lines
    supervisor  one supervisor: spawn, pump, act on stop/kill, record the exit
    launcher    the warm process that forks a supervisor per spawn request
"""
