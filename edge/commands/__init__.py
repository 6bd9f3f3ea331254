"""One module per subcommand group; each offers `add_parser(subparsers)` setting `handler`."""
from . import bench, convert, demo, infer, inspect, profiles, run, service, toolchain

COMMANDS = (profiles, convert, inspect, infer, bench, run, service, demo, toolchain)
