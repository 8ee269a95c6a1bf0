"""Mixed precision: configurable units, their sensitivity, resource rows, the integer program, bit allocation."""
