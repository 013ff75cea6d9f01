/*
 * What an idle supervisor would hold if it were compiled: the floor of the "compiled
 * supervisor" design step that the README's Performance section weighs (issue 11).
 *
 * Forks N stand-ins, each in a session of its own, with three log files open, a `sleep`
 * spawned on two output pipes, a pidfd for its exit, and a poll loop that copies output
 * to the logs: an idle supervisor's state, none of its features. Not part of the
 * product or of the test suite; built and read by hand:
 *
 *   gcc -O2 -o /tmp/idle_supervisor bench/design/idle_supervisor.c
 *   mkdir -p /tmp/stand-ins && /tmp/idle_supervisor 50 /tmp/stand-ins &
 *   # then sum Pss: of /proc/<child>/smaps_rollup over the 50 children, divide by 50;
 *   # kill the children and the parent, then the sleeps (pkill -f '^sleep 3600$')
 *
 * Measured on 2026-12-06 (the machine of the README's table): 69-72 kB of PSS per idle
 * stand-in, against 1.40 MB for a supervisor on Python 3.11 and 0.065-0.071 MB of growth
 * per process for the original server.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void stand_in(const char *dir) {
    setsid();
    const char *names[3] = {"stdout.log", "stderr.log", "combined.log"};
    int logs[3];
    char path[512];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        logs[i] = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    }
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) _exit(1);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err[1], 2);
    char *argv[] = {"sleep", "3600", NULL};
    pid_t pid;
    if (posix_spawnp(&pid, "sleep", &actions, NULL, argv, environ)) _exit(1);
    close(out[1]);
    close(err[1]);
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    struct pollfd fds[3] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {pidfd, POLLIN, 0}};
    char buffer[65536];
    for (;;) {
        if (poll(fds, 3, -1) < 0) continue;
        for (int i = 0; i < 2; i++) {
            if (fds[i].revents) {
                ssize_t n = read(fds[i].fd, buffer, sizeof buffer);
                if (n > 0 && write(logs[i], buffer, (size_t)n) < 0) continue;
            }
        }
        if (fds[2].revents) {
            waitpid(pid, NULL, 0);
            _exit(0);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s COUNT DIR\n", argv[0]);
        return 2;
    }
    int count = atoi(argv[1]);
    for (int i = 0; i < count; i++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%d", argv[2], i);
        mkdir(dir, 0700);
        if (fork() == 0) stand_in(dir);
    }
    pause();
    return 0;
}
