import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

# Hypothesis profiles. `ci` (used by .ci/run, and wherever CI is set): derandomised, so every
# run draws the same examples and a property test catches the same bugs each time; no example
# database. `dev` (local default): fresh random examples each run, failures remembered.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))
