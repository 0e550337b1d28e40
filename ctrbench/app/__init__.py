"""The commands: the command line, run options, runner, tuner, comparison protocols, scaling studies."""
