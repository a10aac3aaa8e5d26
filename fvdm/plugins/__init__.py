"""Built-in plugins. Each module listed here is registered exactly like a
third-party entry point (plugin name -> module path), and can be blocked by name.
"""

#: plugin name -> importable module holding ``@hookimpl`` functions
BUILTIN_PLUGINS: dict[str, str] = {
    "fvdm.noise_schedules": "fvdm.plugins.noise_schedules",
    "fvdm.vtv": "fvdm.plugins.vtv",
    "fvdm.backbones": "fvdm.plugins.backbones",
    "fvdm.autoencoders": "fvdm.plugins.autoencoders",
    "fvdm.attention": "fvdm.plugins.attention",
    "fvdm.samplers": "fvdm.plugins.samplers",
    "fvdm.sampling_schedules": "fvdm.plugins.sampling_schedules",
    "fvdm.tasks": "fvdm.tasks",
    "fvdm.datasets": "fvdm.plugins.datasets",
    "fvdm.evaluators": "fvdm.plugins.evaluators",
    "fvdm.benchmarks": "benchmarks",
}
