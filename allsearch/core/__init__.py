"""The bottom layer: names and errors every layer shares, the study's settings (config), the
search space, objectives, split settings, hardware and the command-line helpers. Imports no
other allsearch layer (docs/design.md, "Layers")."""
