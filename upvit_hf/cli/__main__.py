"""`python -m upvit_hf.cli` (and `accelerate launch -m upvit_hf.cli`) run the `upvit` command line."""

from . import main

main()
