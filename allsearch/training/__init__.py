"""One model trained and measured: the network factory (model), a trial's training (trial), its
result, figures, the champion's pyfunc (serving) and the stand-in trainer. Imports core and data."""
