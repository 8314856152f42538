"""``python -m experiments.run``: the ``jaxprune-run`` command (:mod:`jaxprune.cli`)
run from a clone; see that module for the flags and exit statuses."""

from jaxprune.cli import run

if __name__ == "__main__":
    run()
