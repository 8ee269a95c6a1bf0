"""Resource accounting: weights / activation / total memory and BOPs of a plan, and execution orders."""
