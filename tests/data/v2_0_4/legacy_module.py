from digital_experiments import current_dir, experiment, time_block

BACKEND = __import__("os").environ["LEGACY_BACKEND"]


@experiment(backend=BACKEND)
def legacy(shape, options, text="line one\nline two\n"):
    with time_block("work"):
        (current_dir() / "notes.txt").write_text(text)
    return {"area": shape[0] * shape[1], "lines": text.splitlines(), "options": options}
