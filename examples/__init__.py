"""Examples of networks of one's own for allsearch (`--model examples.resnet:build`), importable
from the repository root: run the commands of examples/resnet.yaml from there."""
