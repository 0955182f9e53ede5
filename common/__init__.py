"""What every layer shares: the bad-input error, atomic writes and output folders, the machine
description. Standard library only, so GPU-side modules may import it."""
