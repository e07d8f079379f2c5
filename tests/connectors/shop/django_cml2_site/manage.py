#!/usr/bin/env python
"""manage.py of the tiny Django site the shop connector is tested against (django-cml2, unmodified)."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cmlsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
