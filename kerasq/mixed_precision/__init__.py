"""Mixed precision: resources, sensitivity, Hessian scores, the integer program and budget search."""
