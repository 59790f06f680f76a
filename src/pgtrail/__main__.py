"""``python -m pgtrail`` runs the command line."""

from pgtrail.cli import main

main()
