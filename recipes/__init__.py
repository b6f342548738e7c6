"""Training and reproduction recipes: scripts that train the reference checkpoints in
``snncompile.models`` and reproduce the direct-training and hybrid results in the README.

Each is run as a module:

* ``train``: deterministic CPU training of the registry checkpoints
  (``models/checkpoints/NAME.pt``) --
  ``python -m snncompile.recipes.train NAME [--epochs E]``
* ``snn_training``: the shared BPTT training loop (``fit``, ``evaluate_snn``) the
  direct-training recipes use; a library module, not a command.
* ``train_cnn_direct``: the MNIST CNN trained directly as an SNN (IF or LIF + ATan, T=4) --
  ``python -m snncompile.recipes.train_cnn_direct [--neuron if|lif]``
* ``train_fc_lif``: a 784-256-10 LIF network with the fast-sigmoid surrogate, T=25 --
  ``python -m snncompile.recipes.train_fc_lif``
* ``train_seq_mnist``: sequential MNIST, plain / feedback / synapse variants --
  ``python -m snncompile.recipes.train_seq_mnist``
* ``finetune_hybrid``: convert the trained MNIST CNN, then fine-tune it with surrogate
  gradients at T=4 -- ``python -m snncompile.recipes.finetune_hybrid``
"""
