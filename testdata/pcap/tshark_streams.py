# Prints, per TCP stream and direction, the byte count and SHA-256 prefix of
# what tshark reassembles ("follow tcp raw"): the independent check behind
# the golden files in streams/. Usage: python3 tshark_streams.py FILE
import subprocess, sys, hashlib
f = sys.argv[1]
n = max(map(int, subprocess.run(["tshark","-r",f,"-T","fields","-e","tcp.stream"],capture_output=True,text=True).stdout.split()))+1
for i in range(n):
    out = subprocess.run(['tshark','-r',f,'-qz',f'follow,tcp,raw,{i}'],capture_output=True,text=True).stdout
    node = {}
    d = {0:b'',1:b''}
    started=False
    for line in out.splitlines():
        if line.startswith('Node 0:'): node[0]=line.split()[-1]
        if line.startswith('Node 1:'): node[1]=line.split()[-1]; started=True; continue
        if not started or line.startswith('='): continue
        if line.startswith('\t'): d[1]+=bytes.fromhex(line.strip())
        elif line.strip(): d[0]+=bytes.fromhex(line.strip())
    for k in (0,1):
        print(f"stream {i} node{k} {node.get(k)} {len(d[k]):7d} bytes sha256 {hashlib.sha256(d[k]).hexdigest()[:16]}")
