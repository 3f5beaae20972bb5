"""Operating the server: backups of the catalog database, their restore and their schedule.

Above the stores (it reads both migration chains' version tables), below the API (which only
shows the schedule's last result).
"""
