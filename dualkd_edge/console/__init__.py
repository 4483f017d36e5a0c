"""What the commands show on a terminal: progress of long loops, tables."""
