"""Reading the logs the supervisors write.

store    complete lines, tails read from the end, ranges, timestamp stripping
feed     following: one shared reader per followed file, each follower an offset
watch    waking feeds when their file grows (inotify, or a poll)
pty      a tty's raw output (pty.log, pty.idx): entries by sequence, tails, follows
inotify  the inotify system calls through ctypes
"""
