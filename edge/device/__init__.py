"""What this device knows about running bundles: its state folder and its own measured choices."""
