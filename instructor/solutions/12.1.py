"""12.1: the samples cpu_profile(sample_freq=997) gives each of two children that each spin
0.4 s of their own CPU time on the same one CPU.

Check with: ebpf_lab.check("12.1", answer)

The sampling timer fires 997 times a second on each CPU, and each tick is charged to the task
running there at that moment. The two children take turns on their one CPU, so each run lasts
about 0.8 s of wall time, but each child is on the CPU for 0.4 s of it: 997 x 0.4 samples each.
Samples measure CPU time, not wall time; the turns are run-queue waits.
"""

answer = round(997 * 0.4)
