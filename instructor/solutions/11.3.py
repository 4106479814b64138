"""11.3: the watchlist that catches python3 by the name PATH finds and by the file's own name."""

import os

# python3 found through PATH is execve'd as /usr/bin/python3, a symlink; the kernel matches
# that string, so the file it points to (e.g. /usr/bin/python3.11) needs its own entry.
answer = ["/usr/bin/python3", os.path.realpath("/usr/bin/python3")]
