"""S3 side of the integration tests, against the S3 server that
vendor-config/test-services.sh starts (s3s-fs); FILE holds its keys (AWS
credentials INI).

  s3_tool.py mkbucket ENDPOINT FILE BUCKET
  s3_tool.py download ENDPOINT FILE BUCKET PREFIX DEST
                                        every archive object under PREFIX/
                                        into DEST/, one JSON line of its
                                        metadata each (not the create-only
                                        probe `run` writes: PROBE below)
  s3_tool.py keys ENDPOINT FILE BUCKET PREFIX
                                        the key of every object under
                                        PREFIX/, one line each
"""
import configparser
import json
import os
import sys

import boto3
from botocore.config import Config


# The object `run` writes create-only at start to check that the store
# refuses to overwrite (src/store/s3/probe.rs, PROBE); not an archive file.
PROBE = "_kafka-store~create-only-probe"


def objects(s3, bucket, prefix):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        yield from page.get("Contents", [])


def client(endpoint, creds):
    ini = configparser.ConfigParser()
    ini.read(creds)
    key, secret = ini["default"]["aws_access_key_id"], ini["default"]["aws_secret_access_key"]
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(s3={"addressing_style": "path"}))


def main(cmd, endpoint, creds, *args):
    s3 = client(endpoint, creds)
    if cmd == "mkbucket":
        s3.create_bucket(Bucket=args[0])
    elif cmd == "download":
        bucket, prefix, dest = args
        for o in objects(s3, bucket, prefix):
            if o["Key"] == prefix + "/" + PROBE:
                continue
            got = s3.get_object(Bucket=bucket, Key=o["Key"])
            path = os.path.join(dest, o["Key"][len(prefix) + 1:])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(got["Body"].read())
            print(json.dumps({"key": o["Key"], "size": o["Size"], "etag": got.get("ETag"),
                              "metadata": got["Metadata"]}))
    elif cmd == "keys":
        bucket, prefix = args
        for o in objects(s3, bucket, prefix):
            print(o["Key"])
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main(*sys.argv[1:])
