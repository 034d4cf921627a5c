#!/bin/sh
# Containers start their services from their entrypoint, so package installs never start them.
exit 101
