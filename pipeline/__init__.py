"""vidbatch: batch video classification and embedding with Ray Data, decord and ResNets."""

__version__ = "0.1.0"
