"""How good a registration is: metrics, known-motion metrics, Learn2Reg scoring, figures and reporting handlers.

- ``metrics``: fold %, std log det J, rigidity error, Dice, MSE, NCC (the only implementations);
- ``motion_metrics``: endpoint error and the sliding jump ratio against a known field;
- ``learn2reg``, ``surface_distance``: Learn2Reg names and metrics as the challenge computes them;
- ``figures``, ``handlers``: figures; Ignite handlers for loss terms, per-pair reports and figures.

May import: scripts.io, scripts.regions, scripts.losses.
"""
