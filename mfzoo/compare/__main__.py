"""`python -m mfzoo.compare`: the same as `mfzoo-compare`."""

from mfzoo.compare.command import main

if __name__ == "__main__":
    main()
