"""``python -m pysampler``: the same as the ``pysampler`` command."""

from pysampler.cli import console_main

if __name__ == "__main__":
    console_main()
