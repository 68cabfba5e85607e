"""Development tools of the MagicAnimate node pack: never loaded by ComfyUI at run time.

Imported by the command-line scripts (``python -m scripts.animate``), the benches (``python -m bench.<name>``) and the
test suite, all run from the repository root:

* :mod:`devtools.comfy_env`: find a ComfyUI tree, copy it to a scratch directory and import it in this process;
* :mod:`devtools.pack`: import this repository as a custom-node package, as ComfyUI's loader does;
* :mod:`devtools.oracle`: an independent plain-torch implementation of MagicAnimate inference;
* :mod:`devtools.random_weights`: random-weight model files in the real layouts;
* :mod:`devtools.workflows`: the builder of the shipped workflow JSON files (``python -m devtools.workflows``);
* :mod:`devtools.run_graph`: running an API-format workflow in-process (what ``scripts/animate.py`` does).
* :mod:`devtools.proc_memory`: a process's resident memory and its peak, from Linux's ``/proc``.
"""
