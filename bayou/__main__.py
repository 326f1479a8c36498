"""``python -m bayou``: the same as the ``bayou`` command."""

from bayou.cli import main

if __name__ == "__main__":
    main()
