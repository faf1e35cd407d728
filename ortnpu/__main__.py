"""``python -m ortnpu`` is the ``ortnpu`` command."""

from ortnpu.cli import run

if __name__ == "__main__":
    run()
