"""camp: an experiment-tracking AutoML sweep harness for fashion-item image classification.

Data flow, one module per stage: data -> preprocess -> model -> train -> sweep -> registry.
"""

__version__ = "0.1.0"
