"""`hdm demo`: the whole system on one machine, from a trained model to heatmaps over gRPC."""
