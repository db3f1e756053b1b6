#!/bin/bash
# The legacy CernVM cluster-context agent, reduced to its HTTP conversation: the same curl
# invocations, headers and parsing as the uCernVM `08clustercontext` script, with the retry
# schedule shortened (PROTOCOL.md part 1). Driven by tests/it/legacy_shell_compat.rs.
#
#   legacy_shell_agent.sh master URL PIN IP
#   legacy_shell_agent.sh worker URL PIN CONTEXT_FILE
#
# Exit status 0 on success, 1 when the tries ran out.
set -u

TRIES=${LEGACY_TRIES:-20}
SLEEP=${LEGACY_SLEEP:-0.2}

post_key() { # url pin key value -> prints the HTTP status code
  curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    -d "{\"key\": \"$3\", \"value\": \"$4\"}" "$1/api/v1/clusters/$2/keys"
}

case "$1" in
  master)
    url=$2 pin=$3 ip=$4
    for key_value in "master_ip $ip" "master_ready yes"; do
      set -- $key_value
      try=0
      while :; do
        code=$(post_key "$url" "$pin" "$1" "$2")
        [ "$code" = "201" ] && break
        try=$((try + 1))
        [ "$try" -ge "$TRIES" ] && { echo "master: $1 not published (last status $code)" >&2; exit 1; }
        sleep "$SLEEP"
      done
    done
    ;;
  worker)
    url=$2 pin=$3 context=$4
    try=0
    # Legacy workers wait for master_ready, then read master_ip, as plain text.
    while :; do
      ready=$(curl -s "$url/api/v1/clusters/$pin/keys/master_ready")
      [ "$(echo "$ready" | sed 's/^master_ready: //')" = "yes" ] && break
      try=$((try + 1))
      [ "$try" -ge "$TRIES" ] && { echo "worker: master never ready" >&2; exit 1; }
      sleep "$SLEEP"
    done
    answer=$(curl -s "$url/api/v1/clusters/$pin/keys/master_ip")
    ip_sed=$(echo "$answer" | sed 's/^master_ip: //')
    ip_awk=$(echo "$answer" | awk '{print $2}')
    if [ -z "$ip_sed" ] || [ "$ip_sed" != "$ip_awk" ]; then
      echo "worker: cannot parse '$answer'" >&2
      exit 1
    fi
    sed -i "s/###MASTER_IP_PLACEHOLDER###/$ip_sed/g" "$context"
    ;;
  *)
    echo "usage: $0 master URL PIN IP | worker URL PIN CONTEXT_FILE" >&2
    exit 2
    ;;
esac
