"""Hugging Face Spaces entry (``app_file`` in the README's front matter); elsewhere run ``synth app``."""

from components.studio import main

if __name__ == "__main__":
    main()
