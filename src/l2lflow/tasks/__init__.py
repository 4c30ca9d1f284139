"""Task families for learning to learn, independent of any simulator.

A task family draws tasks from a task seed (a pure function: the same seed gives the same tasks
everywhere), and encodes a task as spike inputs and targets on a time grid, as plain NumPy
arrays. Keeping them here, apart from the optimizees, lets two inner loops (e.g. e-prop in NEST
and BPTT in PyTorch) learn *the same* tasks, so their results compare directly. One module per
family (``sine``: sine-wave regression; ``evidence``: evidence accumulation;
``spike_patterns``: spike-pattern classification, learnt by the NEST and GeNN reservoirs).
"""
