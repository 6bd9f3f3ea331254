"""One module per subcommand group; each offers `add_parser(subparsers)` setting `handler`."""
from . import bench, convert, demo, deploy, fleet, infer, inspect, keys, models, ota, package, profiles, run, service, toolchain

COMMANDS = (profiles, convert, inspect, infer, bench, run, service, demo, toolchain, models, keys, package, fleet, deploy, ota)
