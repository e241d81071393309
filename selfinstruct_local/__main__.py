"""`python -m selfinstruct_local` is the `sigen` command."""

from selfinstruct_local.cli import main

if __name__ == "__main__":
    main()
