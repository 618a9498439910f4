"""Command-line plumbing shared by the commands: ``key=value`` options of the small tools
(:mod:`.options`) and early checks of Hydra overrides (:mod:`.overrides`)."""
