"""The bundled demo world: easy-VQA images, tiny teacher/student checkpoints, and the `mpa demo` config."""
