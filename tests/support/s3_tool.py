"""S3 side of the integration tests, against the moto server that
vendor-config/test-services.sh starts.

  s3_tool.py setup ENDPOINT FILE        IAM user "archiver" with an s3:* policy;
                                        its keys into FILE (AWS credentials INI)
  s3_tool.py mkbucket ENDPOINT FILE BUCKET
  s3_tool.py download ENDPOINT FILE BUCKET PREFIX DEST
                                        every object under PREFIX/ into DEST/,
                                        one JSON line of its metadata each
  s3_tool.py put ENDPOINT FILE BUCKET KEY SRC [META=VALUE...]
"""
import configparser
import json
import os
import sys

import boto3


def client(service, endpoint, creds=None):
    if creds:
        ini = configparser.ConfigParser()
        ini.read(creds)
        key, secret = ini["default"]["aws_access_key_id"], ini["default"]["aws_secret_access_key"]
    else:
        key, secret = "setup", "setup"
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret)


def main(cmd, endpoint, creds, *args):
    if cmd == "setup":
        iam = client("iam", endpoint)
        iam.create_user(UserName="archiver")
        iam.put_user_policy(UserName="archiver", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        k = iam.create_access_key(UserName="archiver")["AccessKey"]
        with open(creds + ".tmp", "w") as f:
            f.write("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n"
                    % (k["AccessKeyId"], k["SecretAccessKey"]))
        os.replace(creds + ".tmp", creds)
        return
    s3 = client("s3", endpoint, creds)
    if cmd == "mkbucket":
        s3.create_bucket(Bucket=args[0])
    elif cmd == "download":
        bucket, prefix, dest = args
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
            for o in page.get("Contents", []):
                got = s3.get_object(Bucket=bucket, Key=o["Key"])
                path = os.path.join(dest, o["Key"][len(prefix) + 1:])
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(got["Body"].read())
                print(json.dumps({"key": o["Key"], "size": o["Size"], "etag": o["ETag"],
                                  "metadata": got["Metadata"]}))
    elif cmd == "put":
        bucket, key, src, *meta = args
        with open(src, "rb") as f:
            s3.put_object(Bucket=bucket, Key=key, Body=f.read(),
                          Metadata=dict(m.split("=", 1) for m in meta))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main(*sys.argv[1:])
