#!/bin/sh
# A shell part: cloud-init's init stage saves it as scripts/part-NNN and cloud-final runs it.
echo "master=###MASTER_IP_PLACEHOLDER###" > /etc/cluster-master-from-script
