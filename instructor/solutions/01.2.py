"""01.2: the hello() lines of a run in which a thread named lab01-caller starts the script
lab01-script (#!/bin/sh, one line: exec /bin/true) three times.

Check with: ebpf_lab.check("01.2", answer)

Each start is an execve() by lab01-caller: hello reads the caller's name, before the exec
replaces it (3 lines). The kernel sees the #! line and starts /bin/sh inside that same execve,
naming the process after the script's file, lab01-script; nobody calls execve() to start sh.
The script's `exec /bin/true` is a second execve(), by the process now named lab01-script
(3 lines). /bin/true starts nothing.
"""

answer = {"lab01-caller": 3, "lab01-script": 3, "sh": 0, "true": 0}
